"""The ground floor every stage stands on: image decoding and its limits, the bundle format and
its atomic publishing, runtimes, preprocessing, the model service, and typed errors.

Nothing here knows HTTP or Flask, and nothing here imports TensorFlow: a device installs this
package and the server, the workstation adds the trainer and exporter above it.
"""
