"""unCLIP inversion: an image as (z_i, x_T), its CLIP image embedding plus the DDIM-inverted noise of a
decoder conditioned on z_i. `latents` holds the API (re-exported here: `from clipspace import unclip;
unclip.invert(...)`), `decoder` the Decoder protocol and the offline decoder, `stable_unclip` the
pretrained adapter, `views` the grids the notebook shows, `slerp` the interpolation."""
from clipspace.unclip.latents import (NEUTRAL_CAPTION, Latents, check_args, ddim_invert, ddim_sample, decode,
                                      embed_images, embed_texts, images_to_pixels, interpolate, invert,
                                      load_images, pca_decode, pca_reconstruct, pixels_to_images, psnr,
                                      random_noise, text_diff, text_direction, variations)
