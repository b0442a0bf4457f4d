"""`SppSclConfig`, under the import name the package has always had.

The class is defined in `modeling_sppscl/configuration_sppscl.py`, beside the modeling code it configures: the
files that travel to the Hub import each other relatively, so they must share one folder.
"""

from modeling_sppscl.configuration_sppscl import VARIANTS, SppSclConfig


__all__ = ["SppSclConfig", "VARIANTS"]
