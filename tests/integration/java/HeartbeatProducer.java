// A heartbeat producer on Apache Kafka's own Java client, as fleets and gateways written in Java
// run it: the tests use it to check that the worker reads what such producers write.
//
// Usage: java -cp <kafka libs>/*:<dir> HeartbeatProducer BOOTSTRAP TOPIC CODEC MODE [TXN_ID]
//   CODEC: none, gzip, snappy, lz4 or zstd (compression.type)
//   MODE:  plain, commit (one transaction, committed) or abort (one transaction, flushed to the
//          log and then aborted: its records are in the topic, marked aborted)
// Standard input: one message a line, "<key>\t<value>" (the key: the heartbeat's device_id).
// Prints "sent N" once every message is acknowledged (and the transaction ended).
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.Properties;

import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public final class HeartbeatProducer {
    public static void main(String[] args) throws Exception {
        if (args.length < 4) {
            throw new IllegalArgumentException("BOOTSTRAP TOPIC CODEC MODE [TXN_ID]");
        }
        String topic = args[1];
        String mode = args[3];
        boolean transactional = !mode.equals("plain");
        Properties config = new Properties();
        config.put("bootstrap.servers", args[0]);
        config.put("compression.type", args[2]);
        config.put("acks", "all");
        config.put("linger.ms", "20");
        config.put("batch.size", "65536");
        config.put("key.serializer", ByteArraySerializer.class.getName());
        config.put("value.serializer", ByteArraySerializer.class.getName());
        if (transactional) {
            config.put("transactional.id", args[4]);
        }
        int sent = 0;
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(config)) {
            if (transactional) {
                producer.initTransactions();
                producer.beginTransaction();
            }
            BufferedReader lines = new BufferedReader(
                    new InputStreamReader(System.in, StandardCharsets.UTF_8));
            for (String line = lines.readLine(); line != null; line = lines.readLine()) {
                int tab = line.indexOf('\t');
                byte[] key = line.substring(0, tab).getBytes(StandardCharsets.UTF_8);
                byte[] value = line.substring(tab + 1).getBytes(StandardCharsets.UTF_8);
                producer.send(new ProducerRecord<>(topic, key, value));
                sent++;
            }
            producer.flush();
            if (mode.equals("commit")) {
                producer.commitTransaction();
            } else if (mode.equals("abort")) {
                producer.abortTransaction();
            }
        }
        System.out.println("sent " + sent);
    }
}
