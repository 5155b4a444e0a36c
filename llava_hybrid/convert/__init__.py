"""Converters of released checkpoints into this project's layout (apart from the model core).

    factory.convert_factory_checkpoint   TinyLLaVA_Factory teacher (tinyllava/TinyLLaVA-Phi-2-SigLIP-3.1B)
                                         -> llava_phi               (scripts/convert_tinyllava_factory.py)
    matvlm.convert_matvlm_checkpoint     the official MaTVLM release (hustvl/MaTVLM_*_Mamba2)
                                         -> llava_hybrid_phi        (scripts/convert_matvlm.py)
    common                               the Factory key map, source reading and checks, the write
"""
