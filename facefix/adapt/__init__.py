"""Album adaptation (Kuai et al.): collect an album's faces, make pseudo-targets with the diffusion
prior, fine-tune the fast restorer on them (album).
"""
