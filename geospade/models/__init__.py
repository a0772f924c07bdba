"""geospade.models"""
