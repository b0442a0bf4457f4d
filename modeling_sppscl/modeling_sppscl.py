"""PyTorch SPP-SCL: a text tower, a vision tower and the semi-push-pull head for image-text classification."""

import math
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from .configuration_sppscl import SppSclConfig
from .loss_sppscl import SppSclLoss

# Imported for its registration: with the model, `pipeline("image-text-classification", model=...)` works, and
# transformers copies the pipeline's file next to the model when it saves or loads remote code.
from .pipeline_sppscl import ImageTextClassificationPipeline  # noqa: F401
from .remote_code_sppscl import custom_pipelines, save_with_code_files
from .towers_sppscl import accepts_input, image_feature_map, load_tower


@dataclass
class SppSclOutput(ModelOutput):
    """
    Output of [`SppSclModel`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, returned with `labels`):
            The step-1 objective: `ce_loss_weight * ce_loss + intra_text_loss_weight * intra_text_loss +
            intra_image_loss_weight * intra_image_loss`.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`): classifier scores.
        text_embeds (`torch.FloatTensor` of shape `(batch_size, shared_dim)`): `T_p`, the text embedding in the
            shared space (used by the contrastive losses and the gate).
        image_embeds (`torch.FloatTensor` of shape `(batch_size, shared_dim)`): `I_p`, the image counterpart.
        fused_embeds (`torch.FloatTensor` of shape `(batch_size, fusion_dim)`): the fused representation.
        ce_loss, intra_text_loss, intra_image_loss (`torch.FloatTensor` of shape `()`, returned with `labels`):
            the unweighted terms of `loss`.
        text_model_output, vision_model_output (`ModelOutput`, returned with `output_hidden_states=True` or
            `output_attentions=True` when the model runs that tower): the tower's own output, with its
            `hidden_states` / `attentions` (the text tower always returns its hidden states: the head reads them).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    fused_embeds: torch.FloatTensor | None = None
    ce_loss: torch.FloatTensor | None = None
    intra_text_loss: torch.FloatTensor | None = None
    intra_image_loss: torch.FloatTensor | None = None
    text_model_output: ModelOutput | None = None
    vision_model_output: ModelOutput | None = None

    def to_tuple(self) -> tuple:
        # The towers' outputs are ModelOutputs themselves: a tuple output holds them as tuples too.
        return tuple(value.to_tuple() if isinstance(value, ModelOutput) else value for value in super().to_tuple())


class SppSclHierarchicalTextEncoder(nn.Module):
    """Hierarchical attention over the last k layers' token features, then a BiLSTM and a mean over positions."""

    def __init__(self, config: SppSclConfig):
        super().__init__()
        k = config.num_text_layers
        self.layer_attention = nn.Sequential(nn.Linear(k, k, bias=False), nn.ReLU(), nn.Linear(k, k, bias=False))
        self.bilstm = nn.LSTM(
            config.text_config.hidden_size, config.lstm_hidden_size, batch_first=True, bidirectional=True, bias=False
        )
        self.pooling = config.text_pooling

    def forward(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        # hidden_states: [k, B, L, H]
        cls_vectors = hidden_states[:, :, 0].permute(1, 0, 2)  # [B, k, H]
        layer_weights = torch.sigmoid(self.layer_attention(cls_vectors.mean(dim=-1)))  # [B, k]
        tokens = torch.einsum("bk,kblh->blh", layer_weights, hidden_states[:, :, 1:-1])
        if self.pooling == "padded_mean":
            return self.bilstm(tokens)[0].mean(dim=1)
        # Real tokens sit at positions 1 .. n-2 (n real tokens, the first a summary token and the last a
        # separator); packing keeps the backward direction from reading padding first.
        lengths = (attention_mask.sum(dim=1) - 2).clamp(min=1)
        packed = pack_padded_sequence(tokens, lengths.cpu(), batch_first=True, enforce_sorted=False)
        states, _ = pad_packed_sequence(self.bilstm(packed)[0], batch_first=True, total_length=tokens.shape[1])
        return states.sum(dim=1) / lengths.unsqueeze(1).to(states.dtype)


class SppSclSharedProjection(nn.Module):
    """Modality-specific map into the shared space: an MLP (`shared`) then an alignment layer (`align`)."""

    def __init__(self, in_dim: int, config: SppSclConfig):
        super().__init__()
        dim = config.shared_dim
        self.shared = nn.Sequential(
            nn.Linear(in_dim, dim),
            nn.BatchNorm1d(dim),
            nn.ReLU(),
            nn.Dropout(config.dropout),
            nn.Linear(dim, dim),
            nn.BatchNorm1d(dim),
        )
        self.align = nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.ReLU(), nn.Dropout(config.dropout))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.align(self.shared(features))


class SppSclCrossModalFusion(nn.Module):
    """Cross-modal fusion (CMF): each modality's vector attends to the other's values, then an MLP fuses
    `[v_it, v_ti, image, text]`.

    With `fusion_attention="batch"` (the paper) the attention runs across the batch: sample i's text-scaled
    queries meet every sample's keys, a `[B, B]` map. With `"sample"` the candidates are the two modality
    vectors of the same sample, so nothing crosses between samples.
    """

    def __init__(self, config: SppSclConfig):
        super().__init__()
        dim = config.shared_dim
        self.text_query, self.text_key, self.text_value = (nn.Linear(dim, dim) for _ in range(3))
        self.image_query, self.image_key, self.image_value = (nn.Linear(dim, dim) for _ in range(3))
        self.dropout = nn.Dropout(config.dropout)
        self.fuse = nn.Sequential(
            nn.Linear(4 * dim, config.fusion_dim),
            nn.BatchNorm1d(config.fusion_dim),
            nn.ReLU(),
            nn.Dropout(config.dropout),
        )
        self.mode = config.fusion_attention
        self.scale = 1.0 / math.sqrt(dim)
        # Set by a data-parallel trainer to a function that concatenates a tensor over every process: the batch
        # attention then sees the global batch, as one process holding it would. None: this process's batch.
        self.gather_batch = None

    def _project(self, layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(layer(x))

    def _across_batch(self, scaling: torch.Tensor, source: torch.Tensor, query, key, value) -> torch.Tensor:
        keys, values = scaling * self._project(key, source), self._project(value, source)
        if self.gather_batch is not None:
            keys, values = self.gather_batch(keys), self.gather_batch(values)
        attention = torch.softmax((scaling * self._project(query, source)) @ keys.T * self.scale, dim=-1)
        return attention @ values

    def forward(self, text_embeds: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        if self.mode == "batch":
            text_to_image = self._across_batch(text_embeds, image_embeds, self.image_query, self.image_key, self.image_value)
            image_to_text = self._across_batch(image_embeds, text_embeds, self.text_query, self.text_key, self.text_value)
        else:
            queries = torch.stack([self._project(self.text_query, text_embeds), self._project(self.image_query, image_embeds)], dim=1)
            keys = torch.stack([self._project(self.text_key, text_embeds), self._project(self.image_key, image_embeds)], dim=1)
            values = torch.stack([self._project(self.text_value, text_embeds), self._project(self.image_value, image_embeds)], dim=1)
            attended = torch.softmax(queries @ keys.transpose(1, 2) * self.scale, dim=-1) @ values  # [B, 2, D]
            text_to_image, image_to_text = attended[:, 0], attended[:, 1]
        return self.fuse(torch.cat([image_to_text, text_to_image, image_embeds, text_embeds], dim=-1))


class SppSclPreTrainedModel(PreTrainedModel):
    config_class = SppSclConfig
    config: SppSclConfig
    base_model_prefix = "sppscl"
    input_modalities = ("image", "text")
    main_input_name = "input_ids"
    # Checkpointing reaches the towers' layers (`_set_gradient_checkpointing` walks every submodule); the head is
    # small and keeps its activations.
    supports_gradient_checkpointing = True

    def _init_weights(self, module):
        """PyTorch's own default initialisation for the head, as the authors' code uses."""
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in = module.weight[0].numel()
                init.uniform_(module.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))
        elif isinstance(module, nn.LSTM):
            bound = 1 / math.sqrt(module.hidden_size)
            for param in module.parameters():
                init.uniform_(param, -bound, bound)
        else:
            super()._init_weights(module)


class SppSclModel(SppSclPreTrainedModel):
    """SPP-SCL (Semi-Push-Pull Supervised Contrastive Learning) for image-text classification.

    The text tower's last `num_text_layers` hidden states go through hierarchical attention and a BiLSTM, the
    vision tower's feature map through a 1x1 convolution and pooling; both are mapped into a shared space
    (`text_embeds`, `image_embeds`, where the contrastive losses act), fused by cross-modal attention and
    classified. The towers are frozen by default; callers holding their outputs can pass `text_hidden_states`
    and `image_features` instead of raw inputs.
    """

    def __init__(self, config: SppSclConfig, text_model: PreTrainedModel | None = None, vision_model: PreTrainedModel | None = None):
        super().__init__(config)
        self.text_model = text_model if text_model is not None else AutoModel.from_config(config.text_config)
        self.vision_model = vision_model if vision_model is not None else AutoModel.from_config(config.vision_config)
        # The towers share the composite config's sub-configs (so edits stay in sync); the attention kernel the
        # towers were built with is carried over, since a rebuilt sub-config has none and BERT would then ignore
        # the padding mask.
        for tower, sub_config in ((self.text_model, self.config.text_config), (self.vision_model, self.config.vision_config)):
            sub_config._attn_implementation = tower.config._attn_implementation
            tower.config = sub_config
        self.text_encoder = SppSclHierarchicalTextEncoder(config)
        self.image_encoder = nn.Sequential(
            nn.Conv2d(config.image_feature_channels, config.image_reduction_channels, kernel_size=1),
            nn.BatchNorm2d(config.image_reduction_channels),
            nn.ReLU(),
            nn.Dropout(config.dropout),
        )
        self.text_projection = SppSclSharedProjection(2 * config.lstm_hidden_size, config)
        self.image_projection = SppSclSharedProjection(config.image_reduction_channels, config)
        self.fusion = SppSclCrossModalFusion(config)
        self.classifier = nn.Linear(config.fusion_dim, config.num_labels)
        self.post_init()
        self._apply_freezing()

    def _apply_freezing(self) -> None:
        self.text_model.requires_grad_(not self.config.freeze_text_model)
        self.vision_model.requires_grad_(not self.config.freeze_vision_model)

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.config.frozen_towers_follow_train_mode:
            for tower, frozen in ((self.text_model, self.config.freeze_text_model), (self.vision_model, self.config.freeze_vision_model)):
                if frozen:
                    tower.eval()
        return self

    def head_modules(self) -> list[nn.Module]:
        """The trainable SPP-SCL head (everything but the two towers)."""
        return [self.text_encoder, self.image_encoder, self.text_projection, self.image_projection, self.fusion, self.classifier]

    def floating_point_ops(self, input_dict: dict, exclude_embeddings: bool = True) -> int:
        """The Trainer's `total_flos` estimate, 6 x (parameters that ran) x (text tokens). The inherited one counts
        `input_ids` only, so batches of cached tower outputs counted 0; a tower whose output the batch carries did
        not run and is left out."""
        parameters = self.num_parameters(exclude_embeddings=exclude_embeddings)
        for tower, cached in ((self.text_model, "text_hidden_states"), (self.vision_model, "image_features")):
            if input_dict.get(cached) is not None:
                parameters -= tower.num_parameters(exclude_embeddings=exclude_embeddings)
        mask = input_dict.get("attention_mask")
        tokens = int(mask.sum()) if mask is not None else len(input_dict.get("labels", ()))
        return 6 * tokens * parameters

    @classmethod
    def from_text_vision_pretrained(cls, text_model_name_or_path: str, vision_model_name_or_path: str, **kwargs) -> "SppSclModel":
        """Start from two pretrained towers (the head is freshly initialised). A dual-encoder checkpoint (CLIP,
        SigLIP) gives its vision half as the vision tower (see `towers_sppscl.load_tower`).

        Keyword arguments prefixed with `text_` / `vision_` go to the towers' `from_pretrained`, the rest to
        [`SppSclConfig`].
        """
        text_kwargs = {k[len("text_"):]: kwargs.pop(k) for k in list(kwargs) if k.startswith("text_")}
        vision_kwargs = {k[len("vision_"):]: kwargs.pop(k) for k in list(kwargs) if k.startswith("vision_")}
        text_model = load_tower(text_model_name_or_path, "text", **text_kwargs)
        vision_model = load_tower(vision_model_name_or_path, "vision", **vision_kwargs)
        config = SppSclConfig.from_text_vision_configs(text_model.config, vision_model.config, **kwargs)
        return cls(config, text_model=text_model, vision_model=vision_model)

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """Load as `PreTrainedModel` does, then freeze the towers as the config says: loading replaces every
        parameter by a new one that requires grad, undoing the freezing done in `__init__`."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model._apply_freezing()
        return loaded

    # ----- towers -------------------------------------------------------------------------------------------
    def _tower_context(self, frozen: bool):
        # A trainable tower follows the caller's grad mode: under the caller's no_grad (evaluation, the pipeline)
        # it builds no graph either.
        return torch.no_grad() if frozen else nullcontext()

    def text_tower_outputs(self, input_ids, attention_mask=None, token_type_ids=None, **tower_kwargs) -> ModelOutput:
        """The text tower's output, with every hidden state (and whatever `tower_kwargs` ask for, e.g. attentions)."""
        if token_type_ids is not None and accepts_input(self.text_model, "token_type_ids"):
            tower_kwargs["token_type_ids"] = token_type_ids
        tower_kwargs["output_hidden_states"] = True
        with self._tower_context(self.config.freeze_text_model):
            return self.text_model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **tower_kwargs)

    def text_tower_hidden_states(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """The text tower's last `num_text_layers` hidden states, stacked as `[k, B, L, H]`."""
        return self._last_text_layers(self.text_tower_outputs(input_ids, attention_mask, token_type_ids))

    def _last_text_layers(self, tower_output: ModelOutput) -> torch.Tensor:
        return torch.stack(tower_output.hidden_states[-self.config.num_text_layers :])

    def vision_tower_outputs(self, pixel_values: torch.Tensor, **tower_kwargs) -> ModelOutput:
        """The vision tower's own output (a `[B, C, h, w]` map or a sequence of tokens as `last_hidden_state`)."""
        if accepts_input(self.vision_model, "interpolate_pos_encoding"):
            # ViT, DeiT, CLIP and SigLIP refuse images of another size than their config's unless asked to resize
            # their position embeddings (a no-op at the config's size); DINOv2 always does.
            tower_kwargs.setdefault("interpolate_pos_encoding", True)
        with self._tower_context(self.config.freeze_vision_model):
            return self.vision_model(pixel_values=pixel_values, return_dict=True, **tower_kwargs)

    def _feature_map(self, tower_output: ModelOutput, pixel_values: torch.Tensor) -> torch.Tensor:
        return image_feature_map(tower_output.last_hidden_state, self.config.vision_config, pixel_values.shape[-2:])

    def vision_tower_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The vision tower's `[B, C, h, w]` feature map (patch tokens laid on their grid, see `towers_sppscl`)."""
        return self._feature_map(self.vision_tower_outputs(pixel_values), pixel_values)

    # ----- head ---------------------------------------------------------------------------------------------
    def _stack_text_hidden_states(self, text_hidden_states) -> torch.Tensor:
        if isinstance(text_hidden_states, (tuple, list)):
            text_hidden_states = torch.stack(tuple(text_hidden_states))
        expected = (self.config.num_text_layers, self.config.text_config.hidden_size)
        if text_hidden_states.dim() != 4 or (text_hidden_states.shape[0], text_hidden_states.shape[-1]) != expected:
            raise ValueError(
                f"text_hidden_states must be {expected[0]} tensors of shape [batch, length, {expected[1]}] (or one "
                f"[{expected[0]}, batch, length, {expected[1]}] tensor), got shape {tuple(text_hidden_states.shape)}"
            )
        return text_hidden_states

    def _check_image_features(self, image_features: torch.Tensor) -> torch.Tensor:
        channels = self.config.image_feature_channels
        if image_features.dim() != 4 or image_features.shape[1] != channels:
            raise ValueError(
                f"image_features must have shape [batch, {channels}, height, width], got {tuple(image_features.shape)}"
            )
        return image_features

    def _text_hidden(self, input_ids, attention_mask, token_type_ids, text_hidden_states, **tower_kwargs):
        """`[k, B, L, H]` hidden states for the head, and the tower's output when the tower ran (else None)."""
        if text_hidden_states is not None:
            return self._stack_text_hidden_states(text_hidden_states), None
        if input_ids is None:
            raise ValueError("SppSclModel needs the text: pass input_ids (with attention_mask) or text_hidden_states")
        tower_output = self.text_tower_outputs(input_ids, attention_mask, token_type_ids, **tower_kwargs)
        return self._last_text_layers(tower_output), tower_output

    def _image_map(self, pixel_values, image_features, **tower_kwargs):
        """The `[B, C, h, w]` feature map for the head, and the tower's output when the tower ran (else None)."""
        if image_features is not None:
            return self._check_image_features(image_features), None
        if pixel_values is None:
            raise ValueError("SppSclModel needs the image: pass pixel_values or image_features")
        tower_output = self.vision_tower_outputs(pixel_values, **tower_kwargs)
        return self._feature_map(tower_output, pixel_values), tower_output

    def _embed_text(self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        if hidden_states.shape[2] < 3:
            raise ValueError(f"the texts need at least 3 positions (summary token, text, separator), got {hidden_states.shape[2]}")
        if attention_mask is None:
            if self.config.text_pooling == "masked_mean":
                raise ValueError("attention_mask is required with text_pooling='masked_mean' (the default variant)")
        elif attention_mask.shape != hidden_states.shape[1:3]:
            raise ValueError(
                f"attention_mask has shape {tuple(attention_mask.shape)} but the text is {tuple(hidden_states.shape[1:3])}"
            )
        elif (attention_mask.sum(dim=1) < 3).any():
            empty = torch.nonzero(attention_mask.sum(dim=1) < 3).flatten().tolist()
            raise ValueError(
                f"text(s) {empty} of the batch have no token between the summary and separator tokens; the processor "
                "refuses such texts (see processing_sppscl.text_problems)"
            )
        return self.text_projection(self.text_encoder(hidden_states, attention_mask))

    def _embed_image(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.image_projection(self.image_encoder(feature_map).mean(dim=(2, 3)))

    def get_text_features(self, input_ids=None, attention_mask=None, token_type_ids=None, text_hidden_states=None) -> torch.Tensor:
        """`text_embeds` (`T_p`, `[B, shared_dim]`), from raw text or from the tower's hidden states."""
        hidden, _ = self._text_hidden(input_ids, attention_mask, token_type_ids, text_hidden_states)
        with self._single_sample_batchnorm(hidden.shape[1]):
            return self._embed_text(hidden, attention_mask)

    def get_image_features(self, pixel_values=None, image_features=None) -> torch.Tensor:
        """`image_embeds` (`I_p`, `[B, shared_dim]`), from pixels or from the tower's feature map."""
        feature_map, _ = self._image_map(pixel_values, image_features)
        with self._single_sample_batchnorm(feature_map.shape[0]):
            return self._embed_image(feature_map)

    @contextmanager
    def _single_sample_batchnorm(self, batch_size: int):
        """BatchNorm cannot take batch statistics of one sample: such a batch uses the running statistics."""
        norms = [m for head in self.head_modules() for m in head.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
        if batch_size != 1 or not norms:
            yield
            return
        warnings.warn("A training batch of one sample: the head's BatchNorm layers use running statistics for it.")
        for norm in norms:
            norm.eval()
        try:
            yield
        finally:
            for norm in norms:
                norm.train()

    def _check_labels(self, labels: torch.Tensor, batch_size: int) -> None:
        if labels.shape != (batch_size,):
            raise ValueError(f"labels must have shape [{batch_size}], got {tuple(labels.shape)}")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.config.num_labels):
            raise ValueError(
                f"labels must be in [0, {self.config.num_labels - 1}] ({self.config.id2label}), got values "
                f"{sorted(set(labels.tolist()))}"
            )

    def _tower_output_flags(self, output_hidden_states: bool | None, output_attentions: bool | None) -> dict[str, bool]:
        """The `output_*` flags to pass to the towers: only those asked for (a vision tower has no attentions)."""
        flags = {
            "output_hidden_states": self.config.output_hidden_states if output_hidden_states is None else output_hidden_states,
            "output_attentions": self.config.output_attentions if output_attentions is None else output_attentions,
        }
        return {name: True for name, wanted in flags.items() if wanted}

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        text_hidden_states: torch.Tensor | tuple[torch.Tensor, ...] | None = None,
        image_features: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
    ) -> SppSclOutput | tuple:
        r"""
        text_hidden_states (`tuple[torch.Tensor]` or `torch.Tensor`, *optional*):
            The text tower's last `num_text_layers` hidden states (a tuple of `[B, L, H]`, or one `[k, B, L, H]`
            tensor), used instead of running the tower on `input_ids`. Pass `attention_mask` with them.
        image_features (`torch.Tensor` of shape `(B, C, h, w)`, *optional*):
            The vision tower's feature map, used instead of running it on `pixel_values`.
        labels (`torch.LongTensor` of shape `(B,)`, *optional*):
            With labels, `loss` is the step-1 objective (weighted cross-entropy and both intra-modal losses).
        output_hidden_states, output_attentions (`bool`, *optional*, default from the config):
            Return the towers' outputs with their hidden states / attentions (`text_model_output`,
            `vision_model_output`) for each tower the model runs (not for `text_hidden_states` / `image_features`).
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        tower_kwargs = self._tower_output_flags(output_hidden_states, output_attentions)
        hidden, text_output = self._text_hidden(input_ids, attention_mask, token_type_ids, text_hidden_states, **tower_kwargs)
        feature_map, vision_output = self._image_map(pixel_values, image_features, **tower_kwargs)
        if hidden.shape[1] != feature_map.shape[0]:
            raise ValueError(
                f"The text batch has {hidden.shape[1]} samples but the image batch has {feature_map.shape[0]}"
            )
        batch_size = feature_map.shape[0]
        if labels is not None:
            self._check_labels(labels, batch_size)
        with self._single_sample_batchnorm(batch_size):
            text_embeds = self._embed_text(hidden, attention_mask)
            image_embeds = self._embed_image(feature_map)
            fused_embeds = self.fusion(text_embeds, image_embeds)
        logits = self.classifier(fused_embeds)

        terms = {}
        if labels is not None:
            terms = SppSclLoss(self.config)(logits, text_embeds, image_embeds, labels)
        if not tower_kwargs:
            text_output = vision_output = None
        output = SppSclOutput(
            logits=logits, text_embeds=text_embeds, image_embeds=image_embeds, fused_embeds=fused_embeds, **terms,
            text_model_output=text_output, vision_model_output=vision_output,
        )
        return output if return_dict else output.to_tuple()

    def save_pretrained(self, save_directory, is_main_process: bool = True, **kwargs):
        """Save as `PreTrainedModel` does, plus the code files (see `remote_code_sppscl`) and the pipeline entry
        that let the folder load with `trust_remote_code=True` where this package is not installed."""
        self.config.custom_pipelines = custom_pipelines()
        return save_with_code_files(
            self, super().save_pretrained, save_directory, write_files=self.should_save_on_this_rank(is_main_process),
            is_main_process=is_main_process, **kwargs,
        )


AutoModel.register(SppSclConfig, SppSclModel, exist_ok=True)
SppSclModel.register_for_auto_class("AutoModel")

__all__ = ["SppSclModel", "SppSclOutput", "SppSclPreTrainedModel"]
