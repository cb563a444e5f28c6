"""vireid.viz"""
