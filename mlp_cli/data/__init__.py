"""The data: dataset registry, download and cache, IDX parsing, preprocessing, augmentation,
and the user's own images. Never imports training/, reports/ or cli/."""
