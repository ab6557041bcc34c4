"""Write TFLite Model Metadata into a classifier with tflite-support's own writer.

Run with a Python that has `tflite-support` installed (not this project's .venv:
tflite-support pins protobuf < 4, which TensorFlow 2.21 cannot share):

    python tests/tflite_support_writer.py IN.tflite LABELS.txt MEAN STD OUT.tflite

`image_classifier.MetadataWriter` is what TFLite Model Maker calls to label its
image classifiers (MediaPipe Model Maker writes the same schema), so a file it
writes is the real thing edgeport's own reader (edge_core/tflite_metadata.py)
must read. tests/test_byom_serve.py runs it when EDGEPORT_TFLITE_SUPPORT_PYTHON
names such a Python (scripts/test.sh makes one).
"""

import sys

from tflite_support.metadata_writers import image_classifier, writer_utils

src, labels, mean, std, out = sys.argv[1:]
writer = image_classifier.MetadataWriter.create_for_inference(
    writer_utils.load_file(src), [float(mean)], [float(std)], [labels])
writer_utils.save_file(writer.populate(), out)
