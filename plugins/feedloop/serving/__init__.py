"""The ranking pods: score candidates with the live ONNX model, follow the S3 pointer, log impressions.

model.py loads and verifies a registered version, snapshot.py turns a request into the feature
inputs of `feedloop.features.definitions`, watcher.py follows ranker/live.json and swaps models atomically
(refusals.py backs off refused versions, local_cache.py keeps them on disk for a cold start),
impressions.py logs served lists to Kafka, app.py is the HTTP service, pods.py runs replicas.
"""
