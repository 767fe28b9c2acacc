"""Where each cell of a feature map sits on the input image: the centres of its receptive fields.

A CAM is computed on a layer's [h, w] grid and drawn on the [H, W] image, so each cell's value
must be put where the cell looks. The usual assumption (OpenCV / ``tf.image.resize`` half-pixel
centres, pytorch-grad-cam) is that cell ``i`` looks at the middle of the block of pixels
``[i * H / h, (i + 1) * H / h)``. That holds for VGG-style stacks ('same' convolutions, 2x2
pools) but not for keras' DenseNet/ResNet stems: ``ZeroPadding2D(3)`` + 7x7 conv stride 2 +
``ZeroPadding2D(1)`` + 3x3 max-pool stride 2 centre cell ``i`` on pixel ``4 i``, not
``4 i + 1.5``. On the demo's compact DenseNet (4-pixel cells, lesions about 10 px wide) the
half-pixel placement moved every Grad-CAM peak 1.5 px down and right: many pointing-game
misses on the COVID-19 phantoms were within 2 px of the lesion (measured with the demo's
``twice_onk`` model, fold 0, 54 lesion images: peak-to-lesion distance median 2 px).

API (stable):

- ``cell_centres(model, layer) -> ((offset_y, stride_y), (offset_x, stride_x)) | None``: the
  input-pixel coordinate (pixel centres at integers) of cell ``i``'s receptive-field centre is
  ``offset + stride * i`` on each axis. Found by walking the functional graph from the input to
  ``layer`` through the layers whose geometry is known (convolutions and poolings with their
  kernel, stride, dilation and 'valid'/'same' padding, zero padding, cropping, and any layer
  that keeps the spatial size). None when the path holds another layer that changes the size
  (up-sampling, resizing, reshape) or merges branches with different grids; callers then use
  the half-pixel assumption.
- ``half_pixel(n_cells, n_pixels) -> (offset, stride)``: that assumption for one axis.
- ``spatial_shape(layer) -> (h, w) | None``: a layer's feature-map size (None when not 4-D).

Checked in ``tests/explain/test_receptive_field.py`` against the receptive field itself: the
support of a cell's gradient with respect to the input.
"""

from __future__ import annotations

from typing import Any

Axis = tuple[float, float]  # (offset, stride): cell i is centred on input pixel offset + stride * i

_WINDOWED = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D", "MaxPooling2D", "AveragePooling2D")


def half_pixel(n_cells: int, n_pixels: int) -> Axis:
    """Cell centres of the half-pixel assumption: the middle of each ``n_pixels / n_cells`` block."""
    stride = n_pixels / n_cells
    return (stride - 1) / 2, stride


def spatial_shape(layer) -> tuple[Any, Any] | None:
    """(h, w) of a layer's 4-D output; None when not 4-D or ambiguous (a layer called twice)."""
    try:
        shape = tuple(layer.output.shape)
    except (AttributeError, ValueError):  # shared layer: several outputs
        return None
    return (shape[1], shape[2]) if len(shape) == 4 else None


def _parents(layer) -> list:
    nodes = getattr(layer, "inbound_nodes", None) or []
    if not nodes:
        return []
    inbound = nodes[0].inbound_layers
    return list(inbound) if isinstance(inbound, (list, tuple)) else [inbound]


def _windowed(layer, n_in: tuple[Any, Any]) -> tuple[Axis, Axis] | None:
    """(a, s) per axis for a convolution or pooling: output cell o looks at input cell a + s * o."""
    kernel = getattr(layer, "kernel_size", None) or getattr(layer, "pool_size")
    strides = layer.strides
    dilation = getattr(layer, "dilation_rate", (1, 1))
    padding = str(layer.padding).lower()
    out = []
    for ax in range(2):
        span = dilation[ax] * (kernel[ax] - 1)  # input cells between the window's first and last tap
        a = span / 2
        if padding == "same":  # TF pads (total // 2) before, the rest after
            n = n_in[ax]
            if n is None:
                return None
            n_out = -(-int(n) // strides[ax])
            a -= max((n_out - 1) * strides[ax] + span + 1 - int(n), 0) // 2
        elif padding != "valid":
            return None
        out.append((a, float(strides[ax])))
    return out[0], out[1]


def _layer_axes(layer, n_in, n_out) -> tuple[Axis, Axis] | str | None:
    """How one layer maps its output grid onto its input grid: (a, s) per axis, 'same', or None."""
    kind = type(layer).__name__
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return None
    if kind == "ZeroPadding2D":
        (top, _), (left, _) = layer.padding
        return (-float(top), 1.0), (-float(left), 1.0)
    if kind == "Cropping2D":
        (top, _), (left, _) = layer.cropping
        return (float(top), 1.0), (float(left), 1.0)
    if kind in _WINDOWED:
        return _windowed(layer, n_in)
    return "same" if n_in == n_out else None


def cell_centres(model, layer: str) -> tuple[Axis, Axis] | None:
    """Receptive-field centres of ``layer``'s cells in input pixels: ``((off_y, s_y), (off_x, s_x))``.

    Args:
        model: a flat keras functional model (``cxrlib.models.build_model``).
        layer: name of a layer with a 4-D [B, h, w, C] output.

    Returns:
        Per axis ``(offset, stride)``, so that cell ``i`` is centred on input pixel
        ``offset + stride * i``; None when a layer on the way has unknown geometry.
    """
    target = model.get_layer(layer).name
    grids: dict[str, tuple[Axis, Axis] | None] = {}
    for lay in model.layers:  # topological order in a functional model
        parents = _parents(lay)
        if not parents:  # an input: pixel i is centred on pixel i
            grids[lay.name] = ((0.0, 1.0), (0.0, 1.0))
        else:
            known = [grids.get(p.name) for p in parents]
            out_hw = spatial_shape(lay)
            if any(g is None for g in known) or out_hw is None or len(set(known)) > 1:
                grids[lay.name] = None  # unknown, not spatial, or branches on different grids
            else:
                geom = _layer_axes(lay, spatial_shape(parents[0]), out_hw)
                if geom is None:
                    grids[lay.name] = None
                elif geom == "same":
                    grids[lay.name] = known[0]
                else:  # compose: input cell a + s*o lies at off + stride * (a + s*o)
                    grids[lay.name] = tuple((off + stride * a, stride * s)
                                            for (off, stride), (a, s) in zip(known[0], geom))
        if lay.name == target:
            return grids[lay.name]
    raise ValueError(f"layer {layer!r} is not in model {model.name!r}")
