"""vireid.losses"""
