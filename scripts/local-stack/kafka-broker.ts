import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * The parts of a local single-node Kafka (broker and KRaft controller in one JVM) that every stack
 * shares; each stack adds its own listeners and security settings.
 */
export interface KafkaBrokerFiles {
  /** `server.properties` */
  props: string;
  /** log4j2 config: warnings and worse, to the server log. */
  log4j: string;
  /** Class path of Kafka's jars. */
  classPath: string;
}

/** Settings of a one-node test cluster: replication factors of 1, small internal topics. */
export function singleNodeProperties(opts: {
  controllerPort: number;
  dataDir: string;
  internalPartitions: number;
}): string[] {
  return [
    'process.roles=broker,controller',
    'node.id=1',
    `controller.quorum.voters=1@127.0.0.1:${opts.controllerPort}`,
    'controller.listener.names=CONTROLLER',
    `log.dirs=${opts.dataDir}`,
    'num.partitions=1',
    'offsets.topic.replication.factor=1',
    `offsets.topic.num.partitions=${opts.internalPartitions}`,
    'transaction.state.log.replication.factor=1',
    'transaction.state.log.min.isr=1',
    `transaction.state.log.num.partitions=${opts.internalPartitions}`,
    'group.initial.rebalance.delay.ms=0',
    'share.coordinator.state.topic.replication.factor=1',
    'share.coordinator.state.topic.min.isr=1',
  ];
}

/** Writes `server.properties` (the given lines) and the log4j2 config into `dir`. */
export function writeBrokerFiles(dir: string, libs: string, properties: string[]): KafkaBrokerFiles {
  const props = join(dir, 'server.properties');
  writeFileSync(props, [...properties, ''].join('\n'));
  const log4j = join(dir, 'log4j2.yaml');
  writeFileSync(
    log4j,
    [
      'Configuration:',
      '  Appenders:',
      '    Console:',
      '      name: STDOUT',
      '      PatternLayout:',
      '        pattern: "[%d] %p %m (%c)%n"',
      '  Loggers:',
      '    Root:',
      '      level: WARN',
      '      AppenderRef:',
      '        - ref: STDOUT',
      '',
    ].join('\n'),
  );
  return { props, log4j, classPath: `${libs}/*` };
}

/** Formats the broker's storage with a new cluster id; `extraArgs` may add SCRAM users. */
export async function formatStorage(
  java: string,
  files: KafkaBrokerFiles,
  extraArgs: string[] = [],
): Promise<void> {
  // A cluster id is 16 random bytes in unpadded base64url; one starting with "-" would read as an
  // option to the format tool.
  let clusterId = randomBytes(16).toString('base64url');
  while (clusterId.startsWith('-')) clusterId = randomBytes(16).toString('base64url');
  await run(java, [
    `-Dlog4j2.configurationFile=${files.log4j}`,
    '-cp',
    files.classPath,
    'kafka.tools.StorageTool',
    'format',
    '-t',
    clusterId,
    '-c',
    files.props,
    ...extraArgs,
  ]);
}

/** The java arguments that run the broker with the given heap bounds (`256m`, `768m`). */
export function brokerArgs(files: KafkaBrokerFiles, heap: { min: string; max: string }): string[] {
  return [
    `-Xms${heap.min}`,
    `-Xmx${heap.max}`,
    '-XX:+UseG1GC',
    '-Djava.awt.headless=true',
    `-Dlog4j2.configurationFile=${files.log4j}`,
    '-cp',
    files.classPath,
    'kafka.Kafka',
    files.props,
  ];
}
