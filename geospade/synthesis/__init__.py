"""geospade.synthesis"""
