"""geospade.evaluation"""
