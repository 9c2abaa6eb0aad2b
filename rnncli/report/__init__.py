"""``rnncli report``: the plots (matplotlib, imported only here) and the HTML page about a
model. Never imports training.
"""
