from .configuration_sppscl import VARIANTS, SppSclConfig


__all__ = ["SppSclConfig", "VARIANTS"]
