"""The scoring library, NumPy only (no TensorFlow): scores, EER and minDCF
(:mod:`.scores`), trial lists (:mod:`.trials`), whole-utterance embeddings from windows
(:mod:`.windows`), embedding files (:mod:`.embedding_files`), enrolled profiles
(:mod:`.profiles`) and the untrained MFCC baseline (:mod:`.baseline`)."""
