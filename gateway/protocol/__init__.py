"""Client protocol codecs (sans-I/O): Centrifugo JSON today."""
