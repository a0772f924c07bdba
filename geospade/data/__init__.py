"""geospade.data"""
