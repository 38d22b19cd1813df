"""Generic datasets over files and rows: image files, folders and manifests (with caching), crops,
preprocessing, batching, image-report rows and their dataset, segmentation image/mask folders.
The public data sets built on them are in :mod:`medrep.data.sources`."""
