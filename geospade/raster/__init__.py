"""geospade.raster"""
