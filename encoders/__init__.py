"""Built-in vision-language encoders (installed as `vipa_encoders`).

Each module here is a plugin declared in the ``vipa`` entry-point group of
vipa's own pyproject, so built-ins load exactly as third-party encoders do.
"""
