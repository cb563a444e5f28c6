"""vireid.models"""
