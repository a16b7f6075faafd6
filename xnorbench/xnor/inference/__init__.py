"""Packed inference: the packed file format (``packed_file``), layers on the C++
XNOR-popcount kernels (``packed_layers``), runs of them as one call (``chain``), the
float layers around them (``float_layers``), the graph fusions that put them together
(``graph_fusion``, on ``fx_graph``), and the export to OpenVINO (``openvino_binary``,
``openvino_export``).
"""
