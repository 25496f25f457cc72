"""The VIPA model: Visual Expression Generator, VIPA decoder, losses, config-built model."""
