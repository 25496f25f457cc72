"""The plugin against vipa's contracts: what `vipa plugins check` runs, as a pytest test."""

from vipa_plugins.conformance import assert_conforms


def test_the_encoder_fills_the_vipa_encoder_contract():
    assert_conforms("s2d-bow")


def test_the_logger_fills_the_vipa_logger_contract():
    assert_conforms("example-csv")
