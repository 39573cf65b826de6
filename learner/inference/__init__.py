"""The inference library: a trained model (Keras checkpoint or ONNX export) with the
training front end, its calibrations, AS-norm cohort and domain adaptation; what every
user command, bench and test loads.

    from learner.inference.speaker_model import SpeakerModel
    model = SpeakerModel.load("runs/x")
    emb = model.embed_batch(features)        # [N, T, n_mels] -> [N, D] unit vectors
"""
