// Package broker owns everything the pipeline knows about NATS: the embedded
// nats-server with JetStream, connection options, stream and consumer
// provisioning, subject names, and the job/result message schema exchanged by
// origins and executors. It is the only package that spells subject names.
package broker
