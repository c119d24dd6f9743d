"""The YOLO-seg training loss: task-aligned assignment, CIoU + DFL box loss, BCE classes, masks.

Per image the head predicts, for each of the ``A`` anchors (grid cells of strides 8/16/32),
box side distributions ``(A, 4 * reg_max)``, class logits ``(A, nc)`` and mask coefficients
``(A, nm)``, plus one set of prototypes ``(nm, S/4, S/4)``. :class:`TaskAlignedAssigner` picks
for every ground-truth object the ``topk`` anchors inside it with the best
``score**alpha * IoU**beta`` and gives them soft class targets; then

* box: ``1 - CIoU`` and the distribution focal loss of the side distances, weighted by target score,
* cls: BCE against the soft targets, over all anchors, divided by the sum of target scores,
* seg: BCE of ``coef @ protos`` against the object's mask, averaged inside its box and divided
  by the box's area (normalized), so small objects count as much as large ones.

Ground-truth masks come as an overlap map per image (``j + 1`` where object ``j`` is on top),
so overlapping objects are handled without one full mask per object. A map finer than the
prototypes is averaged down to them: the target of a cell is the fraction of it the object
covers (a soft label), not a binary staircase. Upsampled and thresholded at 0.5 as the runtime
does, binary 1/4-resolution targets can at best reach mask mAP50-95 0.76 on the synthetic
shapes; coverage targets 0.99.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Tuple

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LossGains", "SegLoss", "TaskAlignedAssigner", "bbox_ciou", "head_outputs"]


@dataclass
class LossGains:
    box: float = 7.5  # CIoU loss gain
    seg: float = 7.5  # mask loss gain (Ultralytics uses the box gain)
    cls: float = 0.5  # classification loss gain
    dfl: float = 1.5  # distribution focal loss gain


def head_outputs(head: nn.Module, xs: list) -> Dict[str, torch.Tensor]:
    """The Segment head in training form: raw ``distri`` (B, A, 4*reg_max), ``scores`` logits
    (B, A, nc), ``coefs`` (B, A, nm), ``protos`` (B, nm, S/4, S/4) and the feature maps."""
    b = xs[0].shape[0]
    distri = torch.cat([head.cv2[i](xs[i]).view(b, 4 * head.reg_max, -1) for i in range(head.nl)], 2)
    scores = torch.cat([head.cv3[i](xs[i]).view(b, head.nc, -1) for i in range(head.nl)], 2)
    coefs = torch.cat([head.cv4[i](xs[i]).view(b, head.nm, -1) for i in range(head.nl)], 2)
    return {"distri": distri.permute(0, 2, 1).contiguous(), "scores": scores.permute(0, 2, 1).contiguous(),
            "coefs": coefs.permute(0, 2, 1).contiguous(), "protos": head.proto(xs[0]),
            "shapes": torch.tensor([[x.shape[2], x.shape[3]] for x in xs])}


def bbox_ciou(b1: torch.Tensor, b2: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Complete IoU of boxes ``(..., 4)`` xyxy (broadcast), shape ``(...)``."""
    b1_x1, b1_y1, b1_x2, b1_y2 = b1.unbind(-1)
    b2_x1, b2_y1, b2_x2, b2_y2 = b2.unbind(-1)
    w1, h1 = b1_x2 - b1_x1, (b1_y2 - b1_y1).clamp(eps)
    w2, h2 = b2_x2 - b2_x1, (b2_y2 - b2_y1).clamp(eps)
    inter = (torch.min(b1_x2, b2_x2) - torch.max(b1_x1, b2_x1)).clamp(0) * \
            (torch.min(b1_y2, b2_y2) - torch.max(b1_y1, b2_y1)).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    cw = torch.max(b1_x2, b2_x2) - torch.min(b1_x1, b2_x1)
    ch = torch.max(b1_y2, b2_y2) - torch.min(b1_y1, b2_y1)
    c2 = cw.pow(2) + ch.pow(2) + eps  # enclosing box diagonal, squared
    rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2).pow(2) + (b2_y1 + b2_y2 - b1_y1 - b1_y2).pow(2)) / 4
    v = (4 / math.pi**2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
    with torch.no_grad():
        alpha = v / (v - iou + (1 + eps))
    return iou - (rho2 / c2 + v * alpha)


def make_anchor_grid(shapes: torch.Tensor, strides: Tuple[float, ...], device: torch.device,
                     dtype: torch.dtype) -> Tuple[torch.Tensor, torch.Tensor]:
    """Anchor centres ``(A, 2)`` in grid units and their strides ``(A, 1)``."""
    pts, st = [], []
    for (h, w), s in zip(shapes.tolist(), strides):
        sy, sx = torch.meshgrid(torch.arange(h, device=device, dtype=dtype) + 0.5,
                                torch.arange(w, device=device, dtype=dtype) + 0.5, indexing="ij")
        pts.append(torch.stack((sx, sy), -1).view(-1, 2))
        st.append(torch.full((h * w, 1), s, device=device, dtype=dtype))
    return torch.cat(pts), torch.cat(st)


class TaskAlignedAssigner(nn.Module):
    """Task-aligned one-to-many assignment (TOOD): ``topk`` anchors per object, metric
    ``score**alpha * CIoU**beta``; an anchor claimed by several objects goes to the best IoU."""

    def __init__(self, nc: int, topk: int = 10, alpha: float = 0.5, beta: float = 6.0, eps: float = 1e-9) -> None:
        super().__init__()
        self.nc, self.topk, self.alpha, self.beta, self.eps = nc, topk, alpha, beta, eps

    @torch.no_grad()
    def forward(self, pd_scores: torch.Tensor, pd_bboxes: torch.Tensor, anc_points: torch.Tensor,
                gt_labels: torch.Tensor, gt_bboxes: torch.Tensor, mask_gt: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """``pd_scores`` (B, A, nc) probabilities, ``pd_bboxes`` (B, A, 4) xyxy pixels,
        ``anc_points`` (A, 2) pixels, ``gt_labels`` (B, M, 1), ``gt_bboxes`` (B, M, 4) xyxy pixels,
        ``mask_gt`` (B, M, 1) real (not padding) objects.

        Returns target boxes (B, A, 4), target scores (B, A, nc), foreground mask (B, A) and the
        object index of each anchor (B, A)."""
        bs, n_max = gt_bboxes.shape[:2]
        na = pd_bboxes.shape[1]
        if n_max == 0:
            z = torch.zeros_like(pd_bboxes)
            return z, torch.zeros_like(pd_scores), z[..., 0].bool(), z[..., 0].long()
        # anchors whose centre lies inside an object: (B, M, A)
        lt, rb = gt_bboxes.view(-1, 1, 4).chunk(2, 2)
        deltas = torch.cat((anc_points[None] - lt, rb - anc_points[None]), 2).view(bs, n_max, na, 4)
        in_gts = deltas.amin(3).gt(self.eps) & mask_gt.bool()
        # alignment metric of each (object, anchor) pair
        overlaps = torch.zeros((bs, n_max, na), dtype=pd_bboxes.dtype, device=pd_bboxes.device)
        scores = torch.zeros_like(overlaps)
        bi = torch.arange(bs, device=gt_labels.device).view(-1, 1).expand(-1, n_max)
        scores[in_gts] = pd_scores[bi, :, gt_labels.squeeze(-1).long()][in_gts]
        pd = pd_bboxes.unsqueeze(1).expand(-1, n_max, -1, -1)[in_gts]
        gt = gt_bboxes.unsqueeze(2).expand(-1, -1, na, -1)[in_gts]
        overlaps[in_gts] = bbox_ciou(gt, pd).clamp_(0).to(overlaps.dtype)
        align = scores.pow(self.alpha) * overlaps.pow(self.beta)
        # the topk anchors of each object
        top = torch.topk(align, min(self.topk, na), dim=-1).indices  # (B, M, k)
        is_top = torch.zeros_like(align).scatter_(-1, top, 1.0)
        mask_pos = is_top * in_gts * mask_gt
        # an anchor claimed by several objects keeps the one it overlaps most
        fg = mask_pos.sum(-2)
        if fg.max() > 1:
            multi = (fg.unsqueeze(1) > 1).expand(-1, n_max, -1)
            best = torch.zeros_like(mask_pos).scatter_(1, overlaps.argmax(1, keepdim=True), 1.0)
            mask_pos = torch.where(multi, best, mask_pos)
            fg = mask_pos.sum(-2)
        gt_idx = mask_pos.argmax(-2)  # (B, A)
        flat = gt_idx + torch.arange(bs, device=gt_idx.device)[:, None] * n_max
        labels = gt_labels.long().flatten()[flat].clamp_(0)
        target_bboxes = gt_bboxes.view(-1, 4)[flat]
        target_scores = F.one_hot(labels, self.nc).to(pd_scores.dtype) * (fg[..., None] > 0)
        # soft targets: the alignment metric normalized so each object's best anchor gets its IoU
        align = align * mask_pos
        norm = (align * (overlaps * mask_pos).amax(-1, keepdim=True) / (align.amax(-1, keepdim=True) + self.eps)).amax(-2)
        return target_bboxes, target_scores * norm.unsqueeze(-1), fg > 0, gt_idx


class SegLoss:
    """The total loss of a batch. ``__call__(out, batch)`` -> ``(loss * batch_size, items)`` with
    ``items`` the detached ``[box, seg, cls, dfl]`` (each already multiplied by its gain)."""

    def __init__(self, head: nn.Module, gains: LossGains = LossGains(), topk: int = 10) -> None:
        self.nc, self.nm, self.reg_max = head.nc, head.nm, head.reg_max
        self.strides = tuple(float(s) for s in head.strides)
        self.gains = gains
        self.assigner = TaskAlignedAssigner(self.nc, topk=topk)
        self.bins = torch.arange(self.reg_max, dtype=torch.float32)

    def _targets(self, batch: Dict[str, torch.Tensor], bs: int, size: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Padded per-image objects: labels (B, M, 1) and xyxy pixel boxes (B, M, 4), M = most objects in an image."""
        idx = batch["batch_idx"]
        counts = torch.bincount(idx, minlength=bs) if len(idx) else torch.zeros(bs, dtype=torch.long)
        m = int(counts.max()) if len(idx) else 0
        labels = torch.zeros(bs, m, 1, device=size.device)
        boxes = torch.zeros(bs, m, 4, device=size.device)
        if m:
            pos = torch.arange(len(idx), device=idx.device) - (torch.cumsum(counts, 0) - counts)[idx]  # rank within image
            xywh = batch["bboxes"].to(size.device) * size[[1, 0, 1, 0]]
            labels[idx, pos, 0] = batch["cls"].to(size.device).float()
            boxes[idx, pos] = torch.cat((xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2), 1)
        return labels, boxes

    def __call__(self, out: Dict[str, torch.Tensor], batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        distri, scores, coefs, protos = out["distri"], out["scores"], out["coefs"], out["protos"]
        dev, dtype = scores.device, scores.dtype
        bs = scores.shape[0]
        size = out["shapes"][0].to(dev, dtype) * self.strides[0]  # input (h, w) in pixels
        anchors, stride = make_anchor_grid(out["shapes"], self.strides, dev, dtype)
        labels, gt_boxes = self._targets(batch, bs, size)
        mask_gt = gt_boxes.sum(2, keepdim=True).gt_(0.0)
        # predicted boxes from the side distributions, xyxy in grid units
        prob = distri.view(bs, -1, 4, self.reg_max).softmax(3)
        ltrb = prob @ self.bins.to(dev, prob.dtype)
        pred = torch.cat((anchors - ltrb[..., :2], anchors + ltrb[..., 2:]), -1)
        t_boxes, t_scores, fg, gt_idx = self.assigner(scores.detach().sigmoid(), (pred.detach() * stride).to(gt_boxes.dtype),
                                                      anchors * stride, labels, gt_boxes, mask_gt)
        score_sum = t_scores.sum().clamp(min=1)
        loss = torch.zeros(4, device=dev)
        loss[2] = F.binary_cross_entropy_with_logits(scores, t_scores.to(dtype), reduction="sum") / score_sum
        if fg.any():
            weight = t_scores.sum(-1)[fg].unsqueeze(-1)
            t_grid = t_boxes / stride
            iou = bbox_ciou(pred[fg], t_grid[fg])
            loss[0] = ((1.0 - iou).unsqueeze(-1) * weight).sum() / score_sum
            t_ltrb = torch.cat((anchors - t_grid[..., :2], t_grid[..., 2:] - anchors), -1).clamp_(0, self.reg_max - 1 - 0.01)
            loss[3] = (_dfl(distri[fg].view(-1, self.reg_max), t_ltrb[fg]) * weight).sum() / score_sum
            loss[1] = self._mask_loss(batch["masks"].to(dev), fg, gt_idx, t_boxes, coefs, protos, size)
        else:  # keep every head output in the graph (DDP needs a gradient for all parameters)
            loss[1] = (protos * 0).sum() + (coefs * 0).sum() + (distri * 0).sum()
        loss = loss * torch.tensor([self.gains.box, self.gains.seg, self.gains.cls, self.gains.dfl], device=dev)
        return loss.sum() * bs, loss.detach()

    def _mask_loss(self, masks: torch.Tensor, fg: torch.Tensor, gt_idx: torch.Tensor, t_boxes: torch.Tensor,
                   coefs: torch.Tensor, protos: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
        """BCE of the predicted masks on the prototype grid, cropped to each target box and
        normalized by the box area (fraction of the image); mean over foreground anchors."""
        mh, mw = protos.shape[2:]
        total = protos.sum() * 0
        scale = torch.stack([mw / size[1], mh / size[0], mw / size[1], mh / size[0]])
        cols = torch.arange(mw, device=protos.device)[None, None, :]
        rows = torch.arange(mh, device=protos.device)[None, :, None]
        for i in range(protos.shape[0]):
            if not fg[i].any():
                total = total + (protos[i] * 0).sum() + (coefs[i] * 0).sum()
                continue
            idx = gt_idx[i][fg[i]]
            gt = _coverage(masks[i], int(idx.max()) + 1, (mh, mw)).to(protos.dtype)[idx]  # (n, mh, mw)
            box = t_boxes[i][fg[i]] * scale  # xyxy on the mask grid
            area = ((box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1]) / (mh * mw)).clamp(min=1e-6)
            pred = torch.einsum("in,nhw->ihw", coefs[i][fg[i]], protos[i])
            bce = F.binary_cross_entropy_with_logits(pred, gt, reduction="none")
            x1, y1, x2, y2 = box[:, :, None, None].unbind(1)
            inside = (cols >= x1) & (cols < x2) & (rows >= y1) & (rows < y2)
            total = total + ((bce * inside).mean(dim=(1, 2)) / area).sum()
        return total / fg.sum()


def _coverage(overlap: torch.Tensor, n: int, grid: Tuple[int, int]) -> torch.Tensor:
    """(n, gh, gw) fraction of each grid cell that object ``j`` (``j + 1`` in the ``overlap`` map,
    a whole multiple of the grid) covers; a map on the grid itself gives 0/1. One bincount over
    the map: per-object comparisons at full resolution cost more than the rest of the step."""
    gh, gw = grid
    h, w = overlap.shape
    if h % gh or w % gw:
        raise ValueError(f"mask map {h}x{w} is not a whole multiple of the prototype grid {gh}x{gw}")
    fy, fx = h // gh, w // gw
    dev = overlap.device
    cell = (torch.arange(h, device=dev) // fy)[:, None] * gw + (torch.arange(w, device=dev) // fx)[None, :]
    label = overlap.long()
    label = torch.where(label <= n, label, torch.zeros_like(label))  # objects past n: not needed here
    counts = torch.bincount((cell * (n + 1) + label).view(-1), minlength=gh * gw * (n + 1))
    return counts.view(gh, gw, n + 1).permute(2, 0, 1)[1:].float() / (fy * fx)


def _dfl(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Distribution focal loss: cross-entropy towards the two bins around each target distance.
    ``pred`` (n*4, reg_max) logits, ``target`` (n, 4) -> (n, 1)."""
    tl = target.long()
    wl = tl + 1 - target
    ce_l = F.cross_entropy(pred, tl.view(-1), reduction="none").view(tl.shape)
    ce_r = F.cross_entropy(pred, (tl + 1).view(-1), reduction="none").view(tl.shape)
    return (ce_l * wl + ce_r * (1 - wl)).mean(-1, keepdim=True)
