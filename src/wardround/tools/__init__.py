"""wardround.tools"""
