"""vireid.serve"""
