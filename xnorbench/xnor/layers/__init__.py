"""The binary layers and how they train: the fused binary conv/linear, one autograd
node per layer (``functional``), the ``XNORConv2d``/``XNORLinear`` modules
(``modules``), the two training paths (``fused``: ``FusedXNOR``; ``binop``: the
original port's ``BinOp``) and the one training step both run through (``step``).
"""
