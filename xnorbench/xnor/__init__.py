"""The science, usable without the rest of xnorbench, in four parts by job:

* ``sign/``: the sign maths and the three weight-gradient rules, and their fast forms;
* ``layers/``: the binary layers and the two ways they train (``FusedXNOR``, ``BinOp``);
* ``networks/``: the built-in networks and ``binarize`` for any traceable one;
* ``inference/``: the packed file format, packed layers on the C++ kernels, their graph
  fusions, and the export to OpenVINO;

beside ``kernels.py`` (builds and loads the C++ extension in ``csrc/``, which the sign
operators, the packed layers and the ceilings all run on). The names most callers need::

    from xnorbench.xnor import BinOp, FusedXNOR, XNORConv2d, XNORLinear, scaled_sign
    from xnorbench.xnor import save_packed, load_packed
    from xnorbench.xnor.networks import models
"""

from ..variants import XNOR_PATHS
from .inference.packed_file import load_packed, pack_signs, packed_sizes, save_packed, unpack_signs
from .layers.binop import BinOp
from .layers.fused import FusedXNOR
from .layers.modules import XNORConv2d, XNORLinear, binary_layers
from .networks import models
from .sign import bitops
from .sign.rules import GRAD_RULES, BinActive, bin_active, scaled_sign, scaled_sign_grad, sign

__all__ = [
    "GRAD_RULES", "XNOR_PATHS", "BinActive", "BinOp", "FusedXNOR", "XNORConv2d", "XNORLinear",
    "bin_active", "binary_layers", "load_packed", "models", "pack_signs", "packed_sizes",
    "save_packed", "scaled_sign", "bitops", "scaled_sign_grad", "sign", "unpack_signs",
]
