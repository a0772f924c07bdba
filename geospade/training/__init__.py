"""geospade.training"""
