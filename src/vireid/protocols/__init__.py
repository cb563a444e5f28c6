"""vireid.protocols"""
