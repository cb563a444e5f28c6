"""vireid.metrics"""
