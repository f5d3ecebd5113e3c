"""IntelliOptics common library: the only code the edge, cloud and training parts share."""
