"""Analyses of what a classifier needs and where a codec spends its bits (plain PyTorch, no Lightning).

* :mod:`taskcodec.analysis.bits`: bit-allocation maps (learned codecs and JPEG) and their share
  inside object boxes.
* :mod:`taskcodec.analysis.frequency`: the classifier's sensitivity to each 8x8 DCT coefficient
  of each YCbCr channel, and JPEG quantisation tables derived from it.
"""
