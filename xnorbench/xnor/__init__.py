"""The science: binarization with the corrected gradient, XNOR layers, models, packing.

Public API::

    from xnorbench.xnor import BinOp, FusedXNOR, XNORConv2d, XNORLinear, scaled_sign, models
    from xnorbench.xnor import save_packed, load_packed
"""

from . import bitops, models
from .binop import BinOp
from .fused import XNOR_PATHS, FusedXNOR
from .layers import XNORConv2d, XNORLinear, binary_layers
from .packing import load_packed, pack_signs, packed_sizes, save_packed, unpack_signs
from .sign_rules import GRAD_RULES, BinActive, bin_active, scaled_sign, scaled_sign_grad, sign

__all__ = [
    "GRAD_RULES", "XNOR_PATHS", "BinActive", "BinOp", "FusedXNOR", "XNORConv2d", "XNORLinear",
    "bin_active", "binary_layers", "load_packed", "models", "pack_signs", "packed_sizes",
    "save_packed", "scaled_sign", "bitops", "scaled_sign_grad", "sign", "unpack_signs",
]
