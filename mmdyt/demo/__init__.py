"""Small generated datasets and a small pre-trained ViT for the demos.

Nothing can be downloaded, so the demos generate their data in the real
layouts (ADE20K-style folders, video lists) and pre-train their own small ViT,
then adapt it frozen with DyT exactly as a user adapts ViT-B.
"""
