"""What the commands print: prediction records and progress, tables of figures and model
info, explanations. Imports inference and the floors below it, never training.
"""
