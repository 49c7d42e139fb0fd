"""The KIS side: catalogue, frame decoding, sessions, Avro encoding and the Kafka sink."""
