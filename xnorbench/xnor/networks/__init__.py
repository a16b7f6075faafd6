"""Networks and conversion: the built-in networks, float or XNOR (``models``), the
``binarize`` converter for any traceable network (``binarize``, with ``rewire``: where
a binary layer takes its sign), and network specs a run or a packed file records
(``model_spec``).
"""
