"""The data library: Kinetics annotations, ffmpeg video I/O, the synthetic set, frame shards
(writing and random-access reading), clip sampling and transforms, provenance of the bytes."""
