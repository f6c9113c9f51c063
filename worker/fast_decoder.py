"""SAM 2's mask decoder for many points on one image, with the image-side work of
its first transformer layer done once (worker/fast_amg.py, steps 1 and 2 of its
docstring).

Before its first image-side update every point sees the same image tokens, so the
key/value projections of the token->image attention and the query projection of the
image->token attention are computed once per crop (`shared_image_state`), not once
per point; `transformer` runs the rest of Meta's two-way transformer per point batch
and returns the IoU predictions from the IoU token alone, so `low_res_masks` (the
output upscaling and hypernetwork product) runs only for points that can survive.
Each function follows Meta's `MaskDecoder` and `TwoWayTransformer` step by step.
"""

from __future__ import annotations

from typing import Any

import torch


def shared_image_state(predictor: Any) -> dict[str, Any]:
    """What every point of this crop shares: image tokens and layer-1 projections."""
    model = predictor.model
    pe_enc = model.sam_prompt_encoder
    feats = predictor._features
    image_embed = feats["image_embed"][-1].unsqueeze(0)
    dense = pe_enc.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(
        1, -1, pe_enc.image_embedding_size[0], pe_enc.image_embedding_size[1]
    )
    src = image_embed + dense  # Meta: repeat_interleave(image) + dense, per point
    image_pe = pe_enc.get_dense_pe()
    keys0 = src.flatten(2).permute(0, 2, 1)
    pe = image_pe.flatten(2).permute(0, 2, 1)
    layer = model.sam_mask_decoder.transformer.layers[0]
    k = keys0 + pe
    t2i, i2t = layer.cross_attn_token_to_image, layer.cross_attn_image_to_token
    return {
        "src_shape": torch.tensor(src.shape),
        "keys0": keys0,
        "pe": pe,
        "t2i_k": t2i._separate_heads(t2i.k_proj(k), t2i.num_heads),
        "t2i_v": t2i._separate_heads(t2i.v_proj(keys0), t2i.num_heads),
        "i2t_q": i2t._separate_heads(i2t.q_proj(k), i2t.num_heads),
        "high_res": [f[-1].unsqueeze(0) for f in feats["high_res_feats"]],
    }


def transformer(
    predictor: Any, points: torch.Tensor, crop_size: tuple[int, ...], shared: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Meta's `_predict` + `MaskDecoder.predict_masks` up to the upscaling, for
    single foreground points, multimask output: the image tokens after the
    transformer (B,4096,256), the mask tokens (B,4,256) and the predicted IoUs
    of the three multimask outputs (B,3)."""
    import torch.nn.functional as F

    model = predictor.model
    dec = model.sam_mask_decoder
    in_points = predictor._transforms.transform_coords(points, normalize=True, orig_hw=crop_size)
    labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
    sparse, _dense = model.sam_prompt_encoder(
        points=(in_points[:, None, :], labels[:, None]), boxes=None, masks=None
    )
    bsz = sparse.shape[0]

    s = 0
    if dec.pred_obj_scores:
        output_tokens = torch.cat(
            [dec.obj_score_token.weight, dec.iou_token.weight, dec.mask_tokens.weight], 0
        )
        s = 1
    else:
        output_tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], 0)
    output_tokens = output_tokens.unsqueeze(0).expand(bsz, -1, -1)
    tokens = torch.cat((output_tokens, sparse), dim=1)

    # --- two-way transformer, layer 1 with shared image-side projections
    tr = dec.transformer
    layer = tr.layers[0]
    keys0, pe = shared["keys0"], shared["pe"]
    queries = layer.self_attn(q=tokens, k=tokens, v=tokens)  # skip_first_layer_pe
    queries = layer.norm1(queries)
    t2i = layer.cross_attn_token_to_image
    q = t2i._separate_heads(t2i.q_proj(queries + tokens), t2i.num_heads)
    # Materialised per point (cheap: 128 channels): SDPA over a stride-0 batch
    # takes another path and differs from Meta's in the last bit.
    kk = shared["t2i_k"].expand(bsz, -1, -1, -1).contiguous()
    vv = shared["t2i_v"].expand(bsz, -1, -1, -1).contiguous()
    attn = t2i.out_proj(t2i._recombine_heads(F.scaled_dot_product_attention(q, kk, vv)))
    queries = layer.norm2(queries + attn)
    queries = layer.norm3(queries + layer.mlp(queries))
    i2t = layer.cross_attn_image_to_token
    qt = queries + tokens
    k = i2t._separate_heads(i2t.k_proj(qt), i2t.num_heads)
    v = i2t._separate_heads(i2t.v_proj(queries), i2t.num_heads)
    qq = shared["i2t_q"].expand(bsz, -1, -1, -1).contiguous()
    attn = i2t.out_proj(i2t._recombine_heads(F.scaled_dot_product_attention(qq, k, v)))
    keys = layer.norm4(keys0 + attn)
    del attn, qq, k, v
    # --- remaining layers and the final attention: Meta's modules, per point
    for layer in tr.layers[1:]:
        queries, keys = layer(queries=queries, keys=keys, query_pe=tokens, key_pe=pe)
    attn_out = tr.final_attn_token_to_image(q=queries + tokens, k=keys + pe, v=keys)
    hs = tr.norm_final_attn(queries + attn_out)

    iou_token_out = hs[:, s, :]
    mask_tokens_out = hs[:, s + 1 : (s + 1 + dec.num_mask_tokens), :]
    iou_pred = dec.iou_prediction_head(iou_token_out)[:, 1:]  # multimask output
    return keys, mask_tokens_out, iou_pred


def low_res_masks(
    predictor: Any, keys: torch.Tensor, mask_tokens: torch.Tensor, shared: dict[str, Any]
) -> torch.Tensor:
    """`predict_masks`' output upscaling and hypernetwork product for the given
    points: their three multimask low-res logits (P,3,h,w)."""
    dec = predictor.model.sam_mask_decoder
    _, c, h, w = shared["src_shape"].tolist()
    b = keys.shape[0]
    if b == 0:
        return keys.new_zeros((0, dec.num_mask_tokens - 1, h * 4, w * 4))
    src = keys.transpose(1, 2).view(b, c, h, w)
    if not dec.use_high_res_features:
        upscaled = dec.output_upscaling(src)
    else:
        dc1, ln1, act1, dc2, act2 = dec.output_upscaling
        feat_s0, feat_s1 = shared["high_res"]
        upscaled = act1(ln1(dc1(src) + feat_s1))
        upscaled = act2(dc2(upscaled) + feat_s0)
    hyper_in = torch.stack(
        [
            dec.output_hypernetworks_mlps[i](mask_tokens[:, i, :])
            for i in range(dec.num_mask_tokens)
        ],
        dim=1,
    )
    b, c2, h2, w2 = upscaled.shape
    masks: torch.Tensor = (hyper_in @ upscaled.view(b, c2, h2 * w2)).view(b, -1, h2, w2)
    return masks[:, 1:]
