"""facefix eval: held-out references, degraded at two levels, scored method by method (run).
"""
