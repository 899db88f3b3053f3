"""Providers hand out loaded restorers, one per person, loaded once: the fast engine's (fast), the
diffusion engine's (diffusion), an adapted restorer's (adapted), and the engine choice (choose).
They read profiles and model sets; restorers/ itself stays inference only.
"""
