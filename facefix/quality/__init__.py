"""Image quality, independent of any restorer: the synthetic degradation model (degrade) and the
measures of a restored face (metrics).
"""
