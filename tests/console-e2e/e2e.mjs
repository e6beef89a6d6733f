// End-to-end walk through the IT console in headless Debian chromium (playwright-core).
// Started by the ignored test `console_in_headless_chromium` in crates/broker/tests/console.rs,
// which runs a broker, signs an it_admin in and passes:
//   BASE       the broker's base URL
//   SESSION    the it_admin's SSO session cookie value
//   REFERENCE  the reference id of a refused sign-in
//   CODE       its error code
//   OUT        where to save screenshots
//   ADMIN      the it_admin's email (signs in through the sandbox upstream, silently)
//   ISSUER     the sandbox upstream's issuer (for adding a provider through the form)
//   ROSTER_ZIP a OneRoster zip to upload from the rosters page
// Keyboard only where a person would type; fails on any CSP violation or page error.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const { BASE, SESSION, REFERENCE, CODE, OUT, ADMIN, ISSUER, ROSTER_ZIP } = process.env;
if (!BASE || !SESSION || !REFERENCE || !CODE || !OUT || !ADMIN || !ISSUER || !ROSTER_ZIP) {
  console.error('BASE, SESSION, REFERENCE, CODE, OUT, ADMIN, ISSUER and ROSTER_ZIP are required');
  process.exit(2);
}
mkdirSync(OUT, { recursive: true });

const problems = [];
// Set while a step expects a refusal (a form sent with a mistake on purpose).
let expectRefusal = false;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});

function fail(msg) {
  throw new Error(msg);
}

async function expectText(page, text) {
  const body = await page.textContent('body');
  if (!body.includes(text)) fail(`${page.url()}: expected "${text}" in:\n${body.slice(0, 2000)}`);
}

// Any CSP violation, script error or failed console request (the browser's own favicon
// probe aside) is a failure.
function watch(page, label) {
  page.on('console', (m) => {
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
      problems.push(`${label} console: ${m.text()}`);
    }
  });
  page.on('pageerror', (e) => problems.push(`${label} page error: ${e.message}`));
  page.on('response', (r) => {
    const u = new URL(r.url());
    if (r.status() >= 400 && u.pathname !== '/favicon.ico' && !expectRefusal) {
      problems.push(`${label}: HTTP ${r.status()} for ${u.pathname}`);
    }
  });
}

async function shot(page, name) {
  await page.screenshot({ path: join(OUT, `${name}.png`), fullPage: true });
}

try {
  // Sign in as IT starting from a console page: Homeroom's own sign-in (school email,
  // the sandbox upstream), then straight back to the page asked for.
  {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    watch(page, 'sign-in');
    await page.goto(`${BASE}/console/users?q=quill&tenant=t1`);
    await page.waitForURL(/\/login\?tenant=t1/);
    await shot(page, 'desktop-sign-in');
    await page.locator('#email').fill(ADMIN);
    await page.keyboard.press('Enter');
    await page.waitForURL(/\/console\/users\?q=quill&tenant=t1$/);
    await expectText(page, 'Zed Quillfeather');
    await shot(page, 'desktop-signed-in-returned');
    await context.close();
  }

  for (const [label, viewport] of [
    ['desktop', { width: 1280, height: 900 }],
    ['phone', { width: 390, height: 844 }],
  ]) {
    const context = await browser.newContext({ viewport });
    await context.addCookies([{ name: 'hr_session', value: SESSION, url: BASE }]);
    const page = await context.newPage();
    watch(page, label);
    page.on('pageerror', (e) => problems.push(`${label} page error: ${e.message}`));

    // Dashboard: the chart and the top failure reason, linked to its events.
    await page.goto(`${BASE}/console`);
    await expectText(page, 'Sign-ins, last 24 hours');
    if ((await page.locator('meter').count()) < 2) fail('dashboard: no meter bars');
    if ((await page.locator('svg.chart rect').count()) < 1) fail('dashboard: no hourly chart');
    await page.locator(`a[href="/console/events?code=${encodeURIComponent(CODE)}"]`).first().waitFor();
    await shot(page, `${label}-dashboard`);

    // Users: search with the keyboard, open the profile.
    await page.goto(`${BASE}/console/users`);
    await page.locator('#q').focus();
    await page.keyboard.type('quill');
    await page.keyboard.press('Enter');
    await page.waitForURL(/q=quill/);
    await page.getByRole('link', { name: 'Zed Quillfeather' }).click();
    await page.waitForURL(/\/console\/users\/acc_zed/);
    await expectText(page, 'Checklist');
    await shot(page, `${label}-user`);

    // Troubleshooter on the refused attempt.
    await page.goto(`${BASE}/console/troubleshoot`);
    await page.locator('#q').fill(REFERENCE);
    await page.keyboard.press('Enter');
    await page.waitForURL(/troubleshoot\?q=/);
    await expectText(page, CODE);
    await expectText(page, 'For IT:');
    await shot(page, `${label}-troubleshooter`);

    // Events filtered by the code, then the trace.
    await page.goto(`${BASE}/console/events?code=${encodeURIComponent(CODE)}`);
    await shot(page, `${label}-events`);
    await page.locator(`a[href="/console/trace/${REFERENCE}"]`).first().click();
    await expectText(page, `Attempt ${REFERENCE}`);
    await shot(page, `${label}-trace`);

    for (const p of ['providers', 'apps', 'rosters', 'accounts/new', 'providers/new', 'apps/new']) {
      await page.goto(`${BASE}/console/${p}`);
      await shot(page, `${label}-${p.replace('/', '-')}`);
    }
    await context.close();
  }

  // A real form POST from the browser (CSRF cookie + hidden field + Origin): test the
  // provider's connection, then archive and restore a student.
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.addCookies([{ name: 'hr_session', value: SESSION, url: BASE }]);
  const page = await context.newPage();
  watch(page, 'forms');
  await page.goto(`${BASE}/console/providers`);
  await page.getByRole('button', { name: 'Test connection' }).first().click();
  await expectText(page, 'Test connection:');
  await shot(page, 'desktop-provider-test');
  await page.goto(`${BASE}/console/users/acc_zed`);
  await page.getByRole('button', { name: 'Archive' }).click();
  await page.waitForURL(/done=status/);
  await expectText(page, 'status was changed');
  await expectText(page, 'archived');
  await page.getByRole('button', { name: 'Activate' }).click();
  await page.waitForURL(/done=status/);
  await shot(page, 'desktop-user-after-actions');

  // Add a provider through the form: first without its secret (refused next to the
  // field, with the key path), then complete.
  await page.goto(`${BASE}/console/providers/new`);
  await page.locator('#id').fill('e2e-idp');
  await page.locator('#kind').selectOption('oidc');
  await page.locator('#display_name').fill('E2E District sign-in');
  await page.locator('#issuer').fill(ISSUER);
  await page.locator('#client_id').fill('homeroom');
  expectRefusal = true;
  await page.getByRole('button', { name: 'Add provider' }).click();
  await page.waitForLoadState();
  expectRefusal = false;
  await expectText(page, 'config.client_secret:');
  await shot(page, 'desktop-provider-form-refused');
  await page.locator('#client_secret').fill('upstream-secret');
  await page.getByRole('button', { name: 'Add provider' }).click();
  await page.waitForURL(/done=created/);
  await expectText(page, 'E2E District sign-in');
  await page.locator('tr', { hasText: 'E2E District sign-in' }).getByRole('button', { name: 'Test connection' }).click();
  await expectText(page, 'Test connection: E2E District sign-in');
  await shot(page, 'desktop-provider-added-tested');

  // Add an account whose email is in use (another role, different case): the page says
  // where and offers the fix, which works.
  await page.goto(`${BASE}/console/accounts/new`);
  await page.locator('#role').selectOption('teacher');
  await page.locator('#name').fill('Zed Quillfeather');
  await page.locator('#email').fill('Zed.Student@demo.homeroom.test');
  expectRefusal = true;
  await page.getByRole('button', { name: 'Add account' }).click();
  await page.waitForLoadState();
  expectRefusal = false;
  await expectText(page, 'This email is already in use');
  await expectText(page, 'without the role teacher');
  await shot(page, 'desktop-account-email-in-use');
  await page.getByRole('button', { name: 'Add the role teacher to this account' }).click();
  await page.waitForURL(/done=role/);
  await expectText(page, 'student, teacher');
  await shot(page, 'desktop-account-role-added');

  // Upload a roster from the browser (multipart form with the CSRF token).
  await page.goto(`${BASE}/console/rosters`);
  await page.locator('#file').setInputFiles(ROSTER_ZIP);
  await page.getByRole('button', { name: 'Import' }).click();
  await page.waitForLoadState();
  await expectText(page, 'Import of roster.zip: ok');
  await shot(page, 'desktop-roster-uploaded');
  await page.locator('table a').first().click();
  await expectText(page, 'Roster import');
  await shot(page, 'desktop-roster-import');
  await context.close();
} catch (e) {
  problems.push(String(e && e.stack ? e.stack : e));
} finally {
  await browser.close();
}

if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
console.log(`console e2e ok; screenshots in ${OUT}`);
