"""Public pretrained weights by name: the catalogue, the cache, downloads and conversion.

`catalog` and `cache` are plain data and paths (the model layer resolves names with them);
`download` and `convert` fetch, verify and convert into the project's layout for
`ivtuning weights get` and `import`.
"""
