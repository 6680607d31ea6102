import type { Command } from 'commander';
import { requireDatabaseUrl } from '../config.js';
import { migrate } from '../db/migrate.js';
import { withClient } from '../db/postgres.js';
import { ensurePipelineRole } from '../db/role.js';
import { describeShape } from '../db/catalog.js';
import { ErrorCodes, deleteSecretParameters, PipelineError } from '../errors.js';
import type { SourceShape } from '../domain/source-shape.js';
import { assertPostgresReachable } from '../runtime.js';
import { action, configFrom, SOURCE_CONFIG_KEYS, withConfigOptions } from './common.js';

export function registerMigrate(program: Command): void {
  withConfigOptions(
    program
      .command('migrate')
      .description(
        'create the default source tables (when neither exists; never alters yours), the publication, the replication slot and the state schema',
      ),
    ['databaseUrl', ...SOURCE_CONFIG_KEYS, 'slotName', 'publicationName'],
  )
    .option(
      '--recreate-slot',
      'drop and recreate an invalidated slot, or recreate a dropped one (changes in the gap must be backfilled)',
    )
    .option(
      '--create-role [name]',
      'also create/refresh the least-privilege role the pipeline should run as (default name engagement_pipeline; password from PIPELINE_ROLE_PASSWORD, else generated and shown once)',
    )
    .action(
      action(async (options: Record<string, unknown>) => {
        const config = configFrom(options);
        const databaseUrl = requireDatabaseUrl(config);
        await assertPostgresReachable(databaseUrl);
        const report = await migrate(databaseUrl, {
          slotName: config.slotName,
          publicationName: config.publicationName,
          recreateSlot: options.recreateSlot === true,
          eventsTable: config.eventsTable,
          contentTable: config.contentTable,
          contentKey: config.contentKey,
        }).catch(refusedRight);
        const tables =
          report.createdTables.length > 0
            ? `created tables ${report.createdTables.join(', ')}`
            : 'source tables present';
        process.stdout.write(
          `migrated: ${tables}; publication ${config.publicationName} ${report.publication}; slot ${config.slotName} ${report.slot}; state schema engagement_pipeline ready\n${describeShape(report.shape)}\n`,
        );
        if (options.createRole !== undefined)
          await createRole(
            databaseUrl,
            options.createRole,
            config.pipelineRolePassword?.reveal(),
            report.shape,
          ).catch(refusedRight);
        if (report.slot === 'recreated') {
          const from = report.lastDeliveredAt ?? '<the time of the last event your sinks received>';
          process.stdout.write(
            `the slot was recreated: changes committed while it was missing are not in it; run\n  engagement backfill --from ${from} --to ${new Date().toISOString()}\n`,
          );
        }
      }),
    );
}

/**
 * A right the connected role lacks (42501: CREATE on a schema, ownership of a table to publish)
 * is the administrator's to grant: one line, exit 2, like the other setup errors.
 */
function refusedRight(err: unknown): never {
  if ((err as { code?: string }).code !== '42501') throw err;
  throw new PipelineError(
    ErrorCodes.CONFIG,
    `migrate was refused a right: ${(err as Error).message}`,
    'config',
    'run migrate as a superuser, or as a role that owns the source tables, may create schemas in the database and has REPLICATION (and CREATEROLE for --create-role)',
  );
}

async function createRole(
  databaseUrl: string,
  flag: unknown,
  password: string | undefined,
  shape: SourceShape,
): Promise<void> {
  const name = typeof flag === 'string' ? flag : 'engagement_pipeline';
  const role = await withClient(databaseUrl, (client) =>
    ensurePipelineRole(client, { name, password, shape }),
  );
  const url = new URL(databaseUrl);
  url.username = role.name;
  url.password = role.generatedPassword ?? 'PASSWORD';
  // The administrator's own secrets must not be printed with the role's URL (the role's
  // password is in the userinfo; a `?password=` would also override it).
  deleteSecretParameters(url);
  process.stdout.write(
    `role ${role.name} ${role.created ? 'created' : 'updated'}: LOGIN REPLICATION, SELECT on ${shape.content.schema}.${shape.content.name} and ${shape.events.schema}.${shape.events.name}, owner of schema engagement_pipeline, nothing else\n` +
      (role.generatedPassword
        ? `its generated password is shown this once; run the pipeline with\n  DATABASE_URL=${url.toString()}\n`
        : `run the pipeline with DATABASE_URL=${url.toString().replace(':PASSWORD@', ':<its password>@')}\n`),
  );
}
