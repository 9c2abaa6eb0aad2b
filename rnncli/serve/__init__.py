"""``rnncli serve``: the HTTP service over the inference floor (request handling and
batching, TF Serving's REST API, the Starlette application). Never imports training.
"""
