"""Restoring photos and folders (api: the front door): inputs to (source, target) jobs (plan), one
photo's restoration (pipeline), the pipelined folder run (runner), the resume record (record),
--report (report), matching faces to people (matching).
"""
