"""The paper's constants, in one place: the scripts' constant blocks take their defaults from
here (design.md, sections 3, 4 and 8).
"""

FRAMES_PER_VIDEO = 8        # K: frames sampled per video; the quality network reads all K
FRAME_SIZE = (224, 398)     # H, W of the stored frames and of both networks' input (about
                            # 16:9; the aspect ratio is not kept, as in the paper)
SALIENCY_ALPHA = 0.5        # a: strength of the saliency weighting of the frames (0: off)
REGISTERS = 4               # N: register tokens of the saliency network
UNET_WIDTH = 64             # w: the saliency U-Net's base width
BACKBONE = "resnet50"       # the quality network's ResNet trunk
