"""Ideas every room uses, written once: where state lives and the environment (paths), atomic file
output, content hashes and settings keys (files), the torch device and dtype (devices), decoders'
console chatter sent to the debug log (quiet), whether a name is UTF-8 (text). Imports nothing else of facefix.
"""
